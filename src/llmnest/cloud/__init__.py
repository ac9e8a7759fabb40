"""Cloud targets: deployments that run on rented GPU machines instead of this one."""
