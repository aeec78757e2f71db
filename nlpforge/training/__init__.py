"""Training (torch). Imported only by the train and evaluate commands."""
