// The app-launch analogue: node starts, spawns a worker thread (its own V8 isolate), waits.
const { Worker } = require("worker_threads");
const w = new Worker("let s = 0; for (let i = 0; i < 1e6; i++) s += i;", { eval: true });
w.on("exit", () => console.log("done"));
