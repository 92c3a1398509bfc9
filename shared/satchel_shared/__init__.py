"""Code both Satchel services need, and nothing else."""
