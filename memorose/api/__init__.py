"""The typed description of the HTTP API, shared by the node, the gateway and the SDK:
request and response models (``models``) and the OpenAPI 3.1 document built from them
(``openapi``). Importing it starts nothing and imports neither ``node`` nor ``gateway``."""
