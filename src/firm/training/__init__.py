"""Training support shared by tasks: schedules, DeepSpeed ZeRO helpers, export to Hugging Face folders."""
