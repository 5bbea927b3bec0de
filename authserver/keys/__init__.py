"""Signing keys: the model, generation, the storage interface, the schedule's planner
(``plan``), the lifecycle commands (``service``) and the read-side key ring (``ring``)."""
