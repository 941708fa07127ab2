"""fleet-health: the operators' view of an environment, host by host, over SSH."""
