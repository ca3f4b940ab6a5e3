-- MLflow's tracking and registry database, beside Airflow's (the image creates that one).
CREATE DATABASE mlflow;
