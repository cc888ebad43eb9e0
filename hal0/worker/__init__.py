"""``hal0 worker``: llama.cpp's ``rpc-server`` for another box's slots, behind hal0's TCP gate."""
