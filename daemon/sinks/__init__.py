"""Where snapshots go: the state file and the history database, each behind a circuit
breaker so that a slow or failing disk never stalls the drain loop."""
