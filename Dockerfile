# The deployable image: the official Airflow image of the pinned release, our runtime requirements
# installed with the one frozen constraints file, and the DAGs and the plugin package (which carries
# its config and pod template). No secret, no AWS credential: those come from the deployment.
#   docker build -t ml-container-cache:3.3.2 .
# The tag must follow requirements.txt's apache-airflow pin (tests/tools/test_dockerfile.py checks it).
FROM apache/airflow:3.3.2-python3.11

# Installed as the image's airflow user, as the official image documents for extra packages.
USER airflow
COPY --chown=airflow:root requirements.txt constraints.txt /opt/ml-container-cache/
RUN pip install --no-cache-dir -r /opt/ml-container-cache/requirements.txt \
      -c /opt/ml-container-cache/constraints.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
# plugins/.airflowignore comes along: it keeps Airflow from importing ml_cache's modules by bare name.
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/

USER airflow
