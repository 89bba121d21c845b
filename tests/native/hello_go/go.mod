module polytrace.local/hello_go

go 1.22
