"""`sfcluster run`: ship the script to the head, the single-driver lock, stream, exit code."""
