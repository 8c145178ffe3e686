import threading, numpy as np
def work(n):
    a = np.random.default_rng(n).random((512, 512))
    for _ in range(3): a = a @ a.T; a /= a.max()
t = [threading.Thread(target=work, args=(i,)) for i in range(4)]
[x.start() for x in t]; [x.join() for x in t]
