#!/usr/bin/env python3
"""Why T is above T*: for kept runs (run.sh --keep DIR), splits T/T* into
bytes on the wire per byte delivered and the share of the upload capacity
used, and says when the swarm first used 90 % of it in a 1-s window.

    breakdown.py DIR [DIR...]

When uploads are the bound (T* = N*F/C, C = u_s + sum u_i), T/T* is
(wire bytes up / N*F) / (mean share of C used over T): the first factor is
headers, ACKs and retransmissions, the second start-up, stalls and the tail.
"""
import sys, re, collections, json, os
def bps(r):
    m=re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)(bit|bps)", r.lower()); v=float(m[1])*{"":1,"k":1e3,"m":1e6,"g":1e9}[m[2]]
    return (v*8 if m[3]=="bps" else v)/8
for W in sys.argv[1:]:
    P=dict(l.strip().split('=',1) for l in open(W+'/params'))
    F,N=int(P['size']),int(P['leechers']); free=int(P['free'])
    t0=float(open(W+'/t0').read())
    ups=P['up'].split(',')
    C=bps(P['seed_up'])+sum(0 if i<=free else bps(ups[(i-1)%len(ups)]) for i in range(1,N+1))
    st=[];en=[]
    for i in range(1,N+1):
        s,e,rc=open(f'{W}/l{i}.time').read().split(); st.append(float(s)); en.append(float(e))
    first,last=min(st),max(en); T=last-first
    hosts={l.split()[1]:l.split()[0] for l in open(W+'/hosts')}
    c=collections.defaultdict(list)
    for l in open(W+'/counters'):
        t,p,rx,tx=l.split()
        if hosts[p]!='tracker': c[p].append((float(t),int(rx)))
    def at(s,t):
        for x in s:
            if x[0]>=t: return x[1]
        return s[-1][1]
    U=sum(at(s,last)-at(s,first) for s in c.values())
    # time to reach 90% of capacity (1 s windows)
    ramp=None; series=[]
    t=first
    while t<last:
        r=sum(at(s,t+1)-at(s,t) for s in c.values())/C; series.append(r)
        if ramp is None and r>=0.9: ramp=t-first
        t+=1
    data=0
    for i in range(1,N+1):
        for r in (1,2):
            f=f'{W}/l{i}.r{r}.json'
            if os.path.exists(f):
                for l in open(f):
                    x=json.loads(l)
                    if x['event']=='done': data+=x['downloaded']
    Ts=max(F/bps(P['seed_up']),N*F/C)
    print(f"{os.path.basename(W)}: T={T:.2f} T*={Ts:.2f} T/T*={T/Ts:.2f} | wire up/(N F)={U/(N*F):.3f} (piece data down/(N F)={data/(N*F):.3f}) | mean use of upload capacity={U/(C*T):.3f} | first 1-s window >=90%: {ramp} s | last windows {' '.join(f'{x:.2f}' for x in series[-3:])}")
