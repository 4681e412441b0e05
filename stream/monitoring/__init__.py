"""The monitoring flow: feature batches and labels in, drift events and retraining requests out."""
