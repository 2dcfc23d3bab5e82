"""Statistics across seeds, selection and confirmation, and reports: reads the store only."""
