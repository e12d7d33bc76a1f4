"""Rendering and pacing, together: the renderer decides what to show and when (first text at
once, latest text wins, one call in flight, the exact final text), the pacer spaces every
platform call on a shared budget in Redis, and each platform's sink says which budget a call
is charged to (``ReplySink.budget``) and how the call is made."""
