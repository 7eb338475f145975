"""MLflow tracking: the parent run of each resource run, lineage of models, and the keys
the operator and the workloads agree on."""
