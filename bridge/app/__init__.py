"""The application shell: settings, the one composition function, the runtime, the command
line, HTTP (health, readiness, metrics), logs. The only part of ``bridge`` that knows the
platforms, and only through ``bridge.app.platforms``."""
