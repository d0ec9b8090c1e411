module licensd.dev/client

go 1.19

// The lowest versions this module is built and tested with: those Debian 12 packages
// (golang-google-grpc-dev 1.33, golang-google-protobuf-dev 1.28,
// golang-github-golang-protobuf-1-5-dev 1.5.2, golang-golang-x-net-dev 0.7, …); genproto is
// the version gRPC 1.33 itself requires. CI builds offline against exactly those, in GOPATH
// mode and in module mode (scripts/check-go.sh); there is no go.sum because no module proxy
// is reachable there: `go mod tidy` writes it.
require (
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

require (
	github.com/golang/protobuf v1.5.2 // indirect
	golang.org/x/net v0.7.0 // indirect
	golang.org/x/sys v0.3.0 // indirect
	golang.org/x/text v0.7.0 // indirect
)
