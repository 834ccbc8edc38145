"""Raw data: the simulator, ingestion of parquet/CSV files, and the validation gate."""
