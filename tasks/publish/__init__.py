"""What publish writes and reads: the commit of a version (commit.py), size-cut tars, the data card,
Croissant metadata, the leakage guard, and the catalog of published versions."""
