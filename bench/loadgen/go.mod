module corral/bench/loadgen

go 1.19
