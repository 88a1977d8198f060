"""Evaluation: caption metrics as detectron2 DatasetEvaluators."""
