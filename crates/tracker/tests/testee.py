# A process for the tracker's tests: maps private anonymous regions and writes pages on command.
# stdin: "alloc N" -> "ADDR" (N pages, all touched); "write R P..." (region R, pages P) -> "ok";
# "fork P" -> "PID" (a child that writes page P of region 0 every 20 ms until killed);
# "ping" -> "ok".
import ctypes, mmap, os, sys

PAGE = mmap.PAGESIZE
regions = []
libc = ctypes.CDLL(None, use_errno=True)

def out(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()

for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "alloc":
        n = int(cmd[1])
        m = mmap.mmap(-1, n * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        for p in range(n):
            ctypes.memset(addr + p * PAGE, 0x11, 1)
        regions.append((m, addr))
        out("%d" % addr)
    elif cmd[0] == "write":
        _, addr = regions[int(cmd[1])]
        for p in cmd[2:]:
            ctypes.memset(addr + int(p) * PAGE, 0x22, 8)
        out("ok")
    elif cmd[0] == "fork":
        pid = os.fork()
        if pid == 0:
            import time
            _, addr = regions[0]
            while True:
                ctypes.memset(addr + int(cmd[1]) * PAGE, 0x33, 8)
                time.sleep(0.02)
        out("%d" % pid)
    elif cmd[0] == "ping":
        out("ok")
