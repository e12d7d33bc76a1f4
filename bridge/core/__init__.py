"""The platform-neutral core: what a message means, how it is answered, and how the answer is
rendered and paced. No I/O library and no platform SDK is imported here; the core talks to
the world through the Protocols in ``bridge.core.ports``."""
