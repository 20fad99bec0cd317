"""The "ML cache" page in the Airflow UI: view_model (pure), gather (DB + SSM), render (HTML), app (FastAPI)."""
