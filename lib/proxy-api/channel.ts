// A frame channel over a stream socket (the agent's Unix socket): both the agent (server side)
// and the proxy (client side) wrap their `net.Socket` in one of these.
import type { Socket } from 'node:net';
import { RemoraError, hasCode, toRemoraError } from '../errors/index.ts';
import { FrameDecoder, encodeFrame } from './frames.ts';
import type { AgentFrame, ProxyFrame } from './types.ts';

export interface FrameChannelOptions<In> {
  /** `decodeAgentFrame` on the proxy side, `decodeProxyFrame` on the agent side. */
  decode: (value: unknown) => In;
  onFrame: (frame: In) => void;
  /**
   * A single frame failed to parse or validate; the stream is still in sync and stays open.
   * `raw` is the parsed JSON when it was JSON (e.g. to read a refused snapshot's version).
   */
  onInvalid?: (err: RemoraError, raw: unknown) => void;
  /** The socket ended, failed, or was closed because a frame was too large (`err` set then). */
  onClose?: (err?: RemoraError) => void;
  maxFrameBytes?: number;
}

export interface FrameChannel<Out> {
  /** Writes one frame; false when the socket is closed (the frame is dropped). */
  send(frame: Out): boolean;
  close(): void;
  readonly closed: boolean;
}

export function attachFrameChannel<
  In extends AgentFrame | ProxyFrame,
  Out extends AgentFrame | ProxyFrame,
>(socket: Socket, options: FrameChannelOptions<In>): FrameChannel<Out> {
  const decoder = new FrameDecoder(
    options.maxFrameBytes === undefined ? {} : { maxFrameBytes: options.maxFrameBytes },
  );
  let closed = false;
  let closeErr: RemoraError | undefined;

  socket.on('data', (chunk: Buffer) => {
    let values: unknown[];
    try {
      values = decoder.push(chunk);
    } catch (err) {
      const e = toRemoraError(err, 'REMORA_E_PROXY_FRAME_INVALID');
      if (hasCode(e, 'REMORA_E_PROXY_FRAME_TOO_LARGE')) {
        closeErr = e;
        socket.destroy();
        return;
      }
      options.onInvalid?.(e, undefined);
      return;
    }
    for (const raw of values) {
      if (closed) return;
      let frame: In;
      try {
        frame = options.decode(raw);
      } catch (err) {
        options.onInvalid?.(toRemoraError(err, 'REMORA_E_PROXY_FRAME_INVALID'), raw);
        continue;
      }
      options.onFrame(frame);
    }
  });
  socket.on('error', (err) => {
    closeErr ??= new RemoraError(
      'REMORA_E_PROXY_AGENT_UNREACHABLE',
      `agent socket failed: ${err.message}`,
      {},
      { cause: err },
    );
  });
  socket.on('close', () => {
    closed = true;
    options.onClose?.(closeErr);
  });

  return {
    send(frame) {
      if (closed || socket.destroyed || !socket.writable) return false;
      socket.write(encodeFrame(frame));
      return true;
    },
    close() {
      if (closed) return;
      socket.end();
      socket.destroySoon();
    },
    get closed() {
      return closed;
    },
  };
}
