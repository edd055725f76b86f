"""Tornado beside our models: its hello world, and the experiment of the notes this
project began from (a handler that sleeps, with twenty clients at once).

    pip install tornado
    python3 scripts/tornado_server.py --port 8888
    iomodels load --target 127.0.0.1:8888 --connections 20 --path /sleep/100

Routes, each answering after MS milliseconds where it takes a number:

    /                         Hello, world! (the peer of every experiment)
    /sleep/MS                 time.sleep on the IOLoop: every client waits in turn
    /sleep-on-executor/MS     the same sleep with @run_on_executor, on 30 threads
    /wait/MS                  await asyncio.sleep: a timer on the loop, no thread
    /gen-sleep/MS             yield gen.sleep in a @gen.coroutine: the same, older spelling

`iomodels bench` runs this file as its Tornado peer, when Tornado is installed.
"""

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import tornado.web
from tornado import gen
from tornado.concurrent import run_on_executor


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain")
        self.write("Hello, world!\n")


# ANCHOR: handlers
class SleepOnLoop(tornado.web.RequestHandler):
    """The notes' second handler: a blocking call inside the coroutine. The coroutine
    never yields during the sleep, so the IOLoop runs nothing else until it ends."""

    @gen.coroutine
    def get(self, ms):
        time.sleep(int(ms) / 1000)
        self.set_header("Content-Type", "text/plain")
        self.write("slept\n")


class SleepOnExecutor(tornado.web.RequestHandler):
    """The notes' first handler: the same sleep on a thread of a pool of 30; the
    coroutine yields the future run_on_executor returns, and the loop goes on."""

    executor = ThreadPoolExecutor(30)

    @run_on_executor
    def sleep(self, seconds):
        time.sleep(seconds)

    @gen.coroutine
    def get(self, ms):
        yield self.sleep(int(ms) / 1000)
        self.set_header("Content-Type", "text/plain")
        self.write("slept\n")


class Wait(tornado.web.RequestHandler):
    """A wait that holds no thread: the coroutine suspends on a timer of the loop."""

    async def get(self, ms):
        await asyncio.sleep(int(ms) / 1000)
        self.set_header("Content-Type", "text/plain")
        self.write("waited\n")


# ANCHOR_END: handlers


class GenSleep(tornado.web.RequestHandler):
    """The same wait as Tornado wrote it before async/await (Tornado 3 to 5)."""

    @gen.coroutine
    def get(self, ms):
        yield gen.sleep(int(ms) / 1000)
        self.set_header("Content-Type", "text/plain")
        self.write("waited\n")


def app():
    return tornado.web.Application(
        [
            (r"/", Hello),
            (r"/sleep/(\d+)", SleepOnLoop),
            (r"/sleep-on-executor/(\d+)", SleepOnExecutor),
            (r"/wait/(\d+)", Wait),
            (r"/gen-sleep/(\d+)", GenSleep),
        ]
    )


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args()
    app().listen(args.port, address=args.address, backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
