-- MLflow's tracking and registry database, and the feedback store (served slates and user feedback), beside
-- Airflow's (the image creates that one).
CREATE DATABASE mlflow;
CREATE DATABASE adaptrec_feedback;
