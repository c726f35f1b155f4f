"""The application core: settings, storage, wiring and the use cases that cross domains."""
