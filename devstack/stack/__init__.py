"""What `python -m devstack up|run|down` brings up on this machine: registry, local cloud, Airflow."""
