"""The share: a small async Remote interface, the Azure Files implementation, and the emulator."""
