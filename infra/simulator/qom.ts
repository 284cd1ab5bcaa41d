// A small QOM tree over the simulated machine for qom-list / qom-get: /machine (type, memory-backend,
// aux-ram-share), /machine/peripheral[-anon]/<dev> (and its virtio-backend child), /objects/<id>.
// Partial paths resolve like QEMU's (a unique suffix match). Errors use QEMU's texts.
import { compareVersions } from './dialects';
import type { QmpResult } from './qmp-server';
import type { Device, Machine } from './machine';

interface QomProp {
  type: string;
  get?: () => unknown;
}

interface QomNode {
  qomType: string;
  props: Record<string, QomProp>;
  children: Record<string, QomNode>;
}

const node = (
  qomType: string,
  props: Record<string, QomProp> = {},
  children: Record<string, QomNode> = {},
): QomNode => ({
  qomType,
  props,
  children,
});

function deviceNode(vm: Machine, d: Device): QomNode {
  const props: Record<string, QomProp> = {
    parent_bus: {
      type: 'link<bus>',
      get: () => (d.model.pci ? '/machine/i440fx/pci.0' : '/machine/unattached/device[0]/ide.0'),
    },
    realized: { type: 'bool', get: () => true },
    hotplugged: { type: 'bool', get: () => d.hotplugged },
    hotpluggable: { type: 'bool', get: () => true },
  };
  if (d.slot !== undefined) {
    props.addr = { type: 'int32', get: () => d.slot! * 8 };
    props.romfile = { type: 'str', get: () => (d.model.nic ? 'efi-virtio.rom' : '') };
    props.multifunction = { type: 'bool', get: () => false };
  }
  const nicProps: Record<string, QomProp> = {};
  if (d.model.nic) {
    nicProps.mac = { type: 'str', get: () => d.mac };
    nicProps.netdev = { type: 'str', get: () => d.netdev ?? '' };
    const dp = vm.sim.dialect.deviceProperty;
    if (dp && d.model.virtioChild) nicProps[dp.name] = { type: 'bool', get: () => d.props[dp.name] === true };
  }
  for (const [k, t] of Object.entries(d.model.props)) {
    if (!(k in props) && !(k in nicProps) && k !== 'bus' && k !== 'addr') {
      props[k] = { type: t, get: () => d.props[k] ?? defaultFor(t) };
    }
  }
  if (!d.model.virtioChild) return node(d.driver, { ...props, ...nicProps });
  // virtio-*-pci proxies alias their virtio device's properties.
  const child = node(d.model.virtioChild, {
    ...nicProps,
    parent_bus: { type: 'link<bus>', get: () => `${d.path}/virtio-bus` },
  });
  return node(d.driver, { ...props, ...nicProps }, { 'virtio-backend': child });
}

function defaultFor(t: string): unknown {
  if (t === 'bool') return false;
  if (t === 'str') return '';
  if (t === 'OnOffAuto') return 'auto';
  return 0;
}

function buildTree(vm: Machine): QomNode {
  const peripheral: Record<string, QomNode> = {};
  const anon: Record<string, QomNode> = {};
  for (const d of vm.devices) {
    if (d.id !== undefined) peripheral[d.id] = deviceNode(vm, d);
    else anon[d.path.slice('/machine/peripheral-anon/'.length)] = deviceNode(vm, d);
  }
  const machineProps: Record<string, QomProp> = {
    'memory-backend': {
      type: 'link<memory-backend>',
      get: () => (vm.memoryBackend ? `/objects/${vm.memoryBackend}` : ''),
    },
    usb: { type: 'bool', get: () => false },
    'dump-guest-core': { type: 'bool', get: () => true },
    'mem-merge': { type: 'bool', get: () => true },
  };
  if (compareVersions(vm.sim.version, '10.0') >= 0) {
    machineProps['aux-ram-share'] = { type: 'bool', get: () => vm.cfg.machine.props['aux-ram-share'] === true };
  }
  const machine = node(`${vm.machineType}-machine`, machineProps, {
    peripheral: node('container', {}, peripheral),
    'peripheral-anon': node('container', {}, anon),
    unattached: node('container'),
  });
  const objects: Record<string, QomNode> = {};
  for (const o of vm.objects.values()) {
    const props: Record<string, QomProp> = {};
    if (o.qomType.startsWith('memory-backend-')) {
      props.size = { type: 'int', get: () => o.props.size };
      props.share = { type: 'bool', get: () => o.props.share === true };
      props.prealloc = { type: 'bool', get: () => o.props.prealloc === true };
      props.dump = { type: 'bool', get: () => o.props.dump !== false };
      props.merge = { type: 'bool', get: () => o.props.merge !== false };
      if (o.qomType === 'memory-backend-file') props['mem-path'] = { type: 'string', get: () => o.props['mem-path'] };
      if (o.qomType === 'memory-backend-memfd') props.seal = { type: 'bool', get: () => o.props.seal !== false };
    }
    objects[o.id] = node(
      o.qomType,
      props,
      o.qomType.startsWith('memory-backend-') ? { [`${o.id}[0]`]: node('memory-region') } : {},
    );
  }
  return node('container', {}, { machine, objects: node('container', {}, objects) });
}

function walk(root: QomNode, parts: string[]): QomNode | undefined {
  let n: QomNode | undefined = root;
  for (const p of parts) n = n?.children[p];
  return n;
}

/** Resolve an absolute or partial path to a node, or a QMP error. */
function resolve(vm: Machine, path: string): QomNode | { error: { class: string; desc: string } } {
  const root = buildTree(vm);
  const notFound = { error: { class: 'DeviceNotFound', desc: `Device '${path}' not found` } };
  if (path === '/' || path === '') return path === '/' ? root : notFound;
  if (path.startsWith('/')) return walk(root, path.split('/').filter(Boolean)) ?? notFound;
  const parts = path.split('/').filter(Boolean);
  const matches: QomNode[] = [];
  const visit = (n: QomNode, trail: string[]): void => {
    if (trail.length >= parts.length && parts.every((p, i) => trail[trail.length - parts.length + i] === p))
      matches.push(n);
    for (const [k, c] of Object.entries(n.children)) visit(c, [...trail, k]);
  };
  visit(root, []);
  if (matches.length > 1)
    return { error: { class: 'GenericError', desc: `Path '${path}' does not uniquely identify an object` } };
  return matches[0] ?? notFound;
}

export function qomList(vm: Machine, path: string): QmpResult {
  const n = resolve(vm, path);
  if ('error' in n) return n;
  return {
    return: [
      { name: 'type', type: 'string' },
      ...Object.entries(n.props).map(([name, p]) => ({ name, type: p.type })),
      ...Object.entries(n.children).map(([name, c]) => ({ name, type: `child<${c.qomType}>` })),
    ],
  };
}

export function qomGet(vm: Machine, path: string, property: string): QmpResult {
  const n = resolve(vm, path);
  if ('error' in n) return n;
  if (property === 'type') return { return: n.qomType };
  const p = n.props[property];
  if (p?.get) return { return: p.get() ?? '' };
  if (n.children[property]) {
    const base = path.startsWith('/') ? path.replace(/\/$/, '') : '';
    return { return: `${base}/${property}` };
  }
  return { error: { class: 'GenericError', desc: `Property '${n.qomType}.${property}' not found` } };
}
