"""Stand-ins for what cannot exist on the test machine (GPU hosts, docker, ModelScope, the cloud)."""
