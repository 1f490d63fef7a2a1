"""The steps of the Airflow DAGs (``dags/``), one module per DAG; each step is idempotent and
can run again after a failure."""
