"""The compute engine: claims jobs from PostgreSQL and runs configure, algorithm and publish."""
