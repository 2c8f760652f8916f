"""Ray on the nodes: pure argv builders and the GCS query."""
