// Reads a component's core modules: the initial size of the memory they define.
function leb(bytes, at) {
  let result = 0;
  let shift = 0;
  let byte;
  do {
    byte = bytes[at++];
    result += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return [result, at];
}

/** The largest initial memory (in bytes) any core module of `bytes` defines. */
export function initialMemory(bytes) {
  let largest = 0;
  const walk = (start, end, component) => {
    let at = start + 8; // magic and version
    while (at < end) {
      const id = bytes[at++];
      let size;
      [size, at] = leb(bytes, at);
      const next = at + size;
      if (component && (id === 1 || id === 4)) walk(at, next, id === 4); // a core module, or a nested component
      if (!component && id === 5) {
        let count;
        let p;
        [count, p] = leb(bytes, at);
        for (let i = 0; i < count; i++) {
          const flags = bytes[p++];
          let min;
          [min, p] = leb(bytes, p);
          if (flags & 1) [, p] = leb(bytes, p);
          largest = Math.max(largest, min * 65536);
        }
      }
      at = next;
    }
  };
  walk(0, bytes.length, bytes[4] === 0x0d);
  return largest;
}
