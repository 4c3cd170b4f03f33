"""Intake: importing images (folders, manifests, uploads), reading them safely, and where they live on this machine."""
