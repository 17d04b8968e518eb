"""The Sparkplug 3.0 payload schema (`sparkplug_b.proto`, EPL-2.0, see LICENSE-EPL-2.0) and
the module protoc generated from it (`make proto` regenerates it; do not edit by hand)."""
