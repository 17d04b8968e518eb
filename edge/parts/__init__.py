"""The `part` stream: per-part records, their store and the stage that feeds the trackers."""
