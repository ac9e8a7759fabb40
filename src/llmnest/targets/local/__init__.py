"""This machine: engine processes or containers under a supervisor, the gateway in front of them
(`target`), the gateway's own unit and keys (`gateway`) and the surge redeploy (`surge`)."""
