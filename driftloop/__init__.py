"""Generated protobuf contracts live in `driftloop.v1` (see proto/ and `driftloop proto gen`)."""
