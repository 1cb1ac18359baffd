module operatorservice/bench/loadgen

go 1.22
