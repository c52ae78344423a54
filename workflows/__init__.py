"""Workflows, and the pure time maths they call. No I/O here: that lives in activities/."""
