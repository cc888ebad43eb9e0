"""llama-server for this box: the prebuilt Vulkan build or llama.cpp built from source, proven to
run here (``build``), what a binary says about itself (``devices``), and the install that
chooses, verifies and records one (``install``). scripts/setup-backends provisions the tests'
llama-server through the same code."""
