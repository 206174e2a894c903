//! Variable Byte Integers [MQTT-1.5.5]: 1 to 4 bytes, 7 bits each, at most 268,435,455.
