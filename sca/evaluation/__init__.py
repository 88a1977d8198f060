"""Evaluation: caption and mask metrics as a detectron2 DatasetEvaluator, dense-captioning mAP, Java scorers."""
