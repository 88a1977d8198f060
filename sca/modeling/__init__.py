"""The SAM-prompted region captioner and its detectron2-facing wrapper."""
