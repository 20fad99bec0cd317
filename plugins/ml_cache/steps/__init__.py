"""The bodies of the DAGs' TaskFlow tasks, one module per DAG: the DAG files only wire them."""
