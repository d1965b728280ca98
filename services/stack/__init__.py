"""The local default stack: a real Kafka broker, redis-server and a chDB store on 127.0.0.1."""
