"""The Sparkplug B payload schema, Eclipse Tahu's `sparkplug_b.proto` copied verbatim
(EPL-2.0, see LICENSE-EPL-2.0; source commit and sha256 in NOTICE.md), and the module protoc
generated from it (`make proto` regenerates it; do not edit by hand)."""
