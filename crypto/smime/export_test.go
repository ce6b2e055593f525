package smime

// DecodeBase64InPlace exposes decodeBase64InPlace to the external tests.
var DecodeBase64InPlace = decodeBase64InPlace

// Serve exposes serve, the served-message builder, to FuzzServe.
var Serve = serve
