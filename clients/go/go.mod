module licensd.dev/client

go 1.19

// The lowest versions this module is built and tested with: those Debian 12 packages
// (golang-google-grpc-dev 1.33, golang-google-protobuf-dev 1.28,
// golang-github-golang-protobuf-1-5-dev 1.5.2); genproto is the version gRPC 1.33 itself
// requires. CI builds offline in GOPATH mode against exactly those (scripts/check-go.sh).
require (
	github.com/golang/protobuf v1.5.2 // indirect
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
