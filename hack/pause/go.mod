module spotfleet.local/pause

go 1.22
